"""Stream connectors: the contract (``base``), the registry, and one module per connector."""
