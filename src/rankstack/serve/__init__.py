"""The HTTP service and web page (``pip install 'rankstack[serve]'``)."""
