"""The pipeline's microservices and the runtime they share."""
