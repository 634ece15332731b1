"""What the tests share: in-memory ports, fault-injecting handlers, the inference container, the
model-free engine double."""
