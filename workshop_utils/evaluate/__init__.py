"""Base vs tuned on the held-out test split, in the RAFT paper's three test settings.

- golden_only:        the question with its golden document alone
- golden_distractors: golden + k distractors, shuffled (the training format)
- rag_topk:           BM25 retrieves k passages from the whole corpus (documents split into
                      passages of at most max_context_len characters, as a RAG system chunks them)

Both models run through the same `generate` on ONE loaded base: the adapter is switched off for the
base model (no second copy in memory).
"""
