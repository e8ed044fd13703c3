"""The People's Cloud client: talks to any node's swarm API (recipes/peoples-cloud) from a
user's own computer. `client` is the HTTP API, `upload` the multipart body of a file or
directory, `view` the rich tables (and the terminal UI's screen), `tui` the live terminal
UI; commands/swarm.py is the verb."""
