"""X's mobile app conversion API (``conversion_event``): configuration, the destination,
and the ``postback-hub x`` support commands."""
