"""X's mobile app conversion API (``conversion_event``), one job per module:

- ``config``: the configuration models, X's conversion types and window rules.
- ``mapping``: record to ``conversion_event`` parameters, hashing (pure).
- ``tags``: the event-tags file that ``x event-tags sync`` writes (file I/O).
- ``signing``: OAuth 1.0a HMAC-SHA1, with its own percent-encoding.
- ``client``: signed requests per app and what X's answers mean (shared by the
  destination and the commands).
- ``ratelimit``: rate gates per access token, cool-downs after 401/403.
- ``attribution``: X's attribution decision, published to Kafka.
- ``destination``: the destination of ``type = "x"``, composing the above.
- ``commands``: the ``postback-hub x`` support commands.
"""
