"""Classification: chat text -> a verdict over the configured mood categories.

Owns: text normalisation, features (n-grams, glossary, surface), the trained head and its files, the
classifier that puts them together (with optional llama-cpp feature sources), the non-blocking service
between ingest and the classifier, and the train/eval/classify/export commands.

May import: the kernel, ``bot.llm`` (model files and llama-cpp owners) and ``bot.storage`` (stored labels,
for ``chatmood train``). Imported by: ``bot.pipeline``, ``bot.cli``, later features.
"""
