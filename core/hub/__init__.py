"""Hub browsing, Qt-free: what the window's Hub tab and ``mixtral-desk hub`` share.

* :mod:`.references` — what users paste: ``org/repo``, a Hub URL, ``org/repo:Q4_K_M``;
* :mod:`.quants` — a repository's GGUF files grouped by quantization (split sets as one entry);
* :mod:`.browse` — :class:`HubBrowser`: search GGUF repositories, list a repository's quants;
* :mod:`.fit` — per-file fit verdicts from remote headers, with a header cache.
"""
