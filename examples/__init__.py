"""Example applications built with Alto, and the corpora they run on (``examples.data``)."""
