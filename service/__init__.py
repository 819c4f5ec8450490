"""postback-hub receiver: HTTP intake of Adjust callbacks and durable queueing on Kafka."""
