"""Local models: GGUF files, the registry of models chatmood can fetch, and the llama-cpp owners.

Owns: checking and writing GGUF files (``gguf``, no llama.cpp needed), the known models and ``chatmood models``
(``registry``), and the objects that hold a loaded llama-cpp model (``llama``: embeddings and label scoring;
``chat``: writing a short reply; one object per model, calls serialised; callers run them off the event loop).

May import: ``bot.errors`` only. Imported by: ``bot.classify`` and ``bot.persona`` (which generates text).
"""
