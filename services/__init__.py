"""Thin gRPC servers, one package per service."""
