"""Clients for a TF Serving server that serves a tf_bgadl export (REST and gRPC)."""
