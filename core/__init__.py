"""Qt-free core of Mixtral Desk: catalog, GGUF inspection, engine, store and CLI."""
