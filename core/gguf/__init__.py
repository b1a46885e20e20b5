"""GGUF model files: reading, checking and writing them, without llama.cpp.

:mod:`.model_file` inspects a local model (all parts of a split one) before llama.cpp ever sees
it, on top of :mod:`.validation`, the bounded header parser; :mod:`.remote_header` reads the same
facts from a model on the Hub with HTTP Range requests; :mod:`.synthetic` writes small
Mixtral-shaped models with random weights for tests, the self-test and benchmarks.

Nothing is re-exported here: each importer names the module it needs, so importing the model
inspector does not also load :mod:`.remote_header` and with it huggingface_hub.
"""
