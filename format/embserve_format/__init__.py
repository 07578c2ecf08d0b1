"""embserve's format core: the table bundle and everything every other part shares, numpy only.

Modules (no grpc, no protobuf, no faiss is ever imported here; tests/processes/test_packaging.py checks it):

- :mod:`embserve_format.bundle`: bundle format 1 reader, validator, file names, key and name rules
- :mod:`embserve_format.bundle_writer`: the atomic writer and :func:`~embserve_format.bundle_writer.publish`
- :mod:`embserve_format.labels`: a table's version labels (labels.json beside the versions): read, validate, write
- :mod:`embserve_format.keyindex` / :mod:`embserve_format.keyfile`: the compact key -> row index and its keys.idx file
- :mod:`embserve_format.keybatch`: packed keys (``LookupRequest.packed_keys``), which the key index reads in place
- :mod:`embserve_format.text`: the word tokenizer rule and the pooling of a text's rows into one vector
- :mod:`embserve_format.arrays`: wire dtypes and the one :func:`~embserve_format.arrays.unit`
- :mod:`embserve_format.limits`: default limits both ends know
- :mod:`embserve_format.maplayout`: the 2-D neighbourhood map layout
- :mod:`embserve_format.gensim_files`: gensim's evaluation files, read as gensim reads them
"""

__version__ = "0.1.0"
