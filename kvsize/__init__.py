"""kvsize: KV-cache capacity planning for LLM inference.

The package root stays empty of imports so that `import kvsize` costs nothing;
the sizing core lives in `kvsize.sizing`, spec loading in `kvsize.catalog`.
"""

__version__ = "0.1.0"
