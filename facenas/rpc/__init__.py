"""gRPC plumbing shared by every service: server bootstrap, error mapping, metrics, clients."""
