"""The site inventory: schema, validation, secrets and loading."""
