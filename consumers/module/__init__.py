"""BackInApp-style module partners: a configurable HTTP template per partner.

``config`` holds the configuration model (type ``module``), ``template`` the
placeholder rendering, ``partner`` the destination (routing and mapping, pure,
plus one HTTP send per record).
"""
