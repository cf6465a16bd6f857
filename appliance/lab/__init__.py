"""The local lab: frontend nodes as network namespaces on this machine, each with its own sshd."""
