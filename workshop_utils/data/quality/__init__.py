"""Data quality checks (notebook 02): duplicates, groundedness/relevance, token lengths, balance, PII.

Everything is O(n) in the number of records except the embedding check, which runs on a sample:
- exact duplicates: hashing
- near duplicates: MinHash LSH (datasketch) over character 3-gram shingles -- Korean has no reliable
  whitespace words ("인구는" vs "인구가"), so words make poor shingles
- embedding near-duplicates: cosine of sentence embeddings for a sample (the seed's 코사인 유사도)
"""
