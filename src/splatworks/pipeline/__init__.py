"""End-to-end jobs that chain the stages; the CLI and the service both call these."""
