"""Pipeline E: contrastive and MLM training data (mirrors nomic contrastors' v1 text scripts).

- :mod:`anatomy.contrastive.pretokenize`: MLM pretokenization, ``group_texts`` packing.
"""
