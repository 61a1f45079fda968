"""Proof of Attribution: which training rows shaped a model and each of its answers.

The gradient engine (this package, apart from the span modules):

- `gradients`  per-example loss gradients of a classifier's trainable tensors (LoRA + head), and the
               seeded Johnson-Lindenstrauss projection to D dimensions (default 1024); optionally one
               block of D / modules coordinates per LoRA module / the head (`per_module`).
- `lm`         the same for causal-LM adapters (summed target-token loss per row).
- `curvature`  damped Gauss-Newton inverse in the projected space, (F + lambda I)^-1 with
               lambda = 30 x mean eigenvalue (optionally block-diagonal per module, each block damped
               on its own scale), and the training vectors the index stores:
               (F + lambda I)^-1 g * min(1, median|g| / |g|), plus self-influence g^T (F + lambda I)^-1 g
               and the mislabel score (how strongly a row's nearest rows oppose its label, and its
               self-influence, by rank).
- `index`      build at training time, store content-addressed (4 D + 40 bytes per row), score a query
               with one projected gradient and one matrix product; `mislabel_scores`.
- `duplicates` exact and near-duplicate rows (same label; character 5-gram Jaccard >= 0.8, or the
               shorter row's words a subsequence of a longer one's, at most twice as many) share one
               row's credit: the group's mean score goes to its earliest member by (contribution id,
               row index), so a second copy, a Sybil's copy or a split contribution earns nothing extra.
- `aggregate`  per-row scores -> contributions, contributors, Datanets: signed sums and integer
               shares (ppm) of the positive part.
- `valuation`  model-level value: influence on held-out loss, each held-out row's scores normalised
               and weighted by the loss the model removed there, aggregated the same way;
  `chart`, `report`  its table, SVG chart and JSON (`provenant attribution report <model>`).

Reproducibility: on one machine (same torch build and thread count) the same model, index and query
give bit-identical scores; every reduction runs in a fixed order.
"""
