"""siocluster balancer: the sticky reverse proxy on the public port."""
