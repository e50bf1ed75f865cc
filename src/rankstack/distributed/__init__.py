"""Scale-out on Ray (``pip install 'rankstack[ray]'``): sharded encoding and partitioned query runs."""
