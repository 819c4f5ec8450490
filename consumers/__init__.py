"""postback-hub consumers: the delivery runtime and one module per destination."""
