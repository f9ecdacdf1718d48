"""What each result column means: one line per column (meaning, range, source), shown under
every report table that has the column, and which column a table preview is sorted by.

One dictionary, so a column means the same thing in every report; a table whose columns are
not listed here simply gets no legend line for them.
"""
from __future__ import annotations

import pandas as pd

#: column -> "meaning; range; source"
COLUMNS: dict[str, str] = {
    "induction": "attention from a token in the second copy of a repeated random sequence to "
                 "the token after its first occurrence; 0-1; Olsson et al. 2022. On random "
                 "repeats it equals prefix_matching (the only earlier match is that token)",
    "prefix_matching": "attention to tokens right after earlier occurrences of the current "
                       "token; 0-1; Olsson et al. 2022",
    "previous_token": "attention to the immediately preceding token; 0-1",
    "duplicate_token": "attention to earlier occurrences of the current token; 0-1",
    "copying": "eigenvalue score of the OV circuit W_U W_O W_V W_E: sum(eig) / sum(|eig|); "
               "-1..1, positive = the head copies the tokens it attends to; Olsson et al. 2022",
    "alpha": "mean attention paid to this key by the queries that can see it (alpha(k)); "
             "0-1; Gu et al. 2024",
    "alpha_min": "alpha over prompts: the lowest prompt's value; 0-1",
    "alpha_max": "alpha over prompts: the highest prompt's value; 0-1",
    "sink_share": "share of prompts with alpha > eps (eps 0.3: Sink_k^eps); 0-1; Gu et al. 2024",
    "mass_inside": "share of the head's dense attention mass inside the sparse layout "
                   "(mean over queries); 0-1; 1 = the sparse swap loses nothing here",
    "min_mass_inside": "mass_inside of the worst query; 0-1",
    "k_ratio": "norm of the first token's key / mean norm of the other keys; sinks often have "
               "small keys (ratio < 1)",
    "v_ratio": "norm of the first token's value / mean norm of the other values; sinks often "
               "carry small values (ratio < 1); Gu et al. 2024",
    "score": "composition / attribution score of the pair or edge (see the table's caption)",
    "metric": "task metric of the patched run (higher = more like the clean run)",
    "normalised": "(metric - corrupted) / (clean - corrupted): 0 = corrupted, 1 = clean; "
                  "Wang et al. 2022",
    "ppl": "perplexity, exp(mean next-token loss); lower is better",
    "accuracy": "share of queries answered exactly; 0-1",
    "state_size": "floats per head carried when decoding token by token; Arora et al. 2024",
    "component": "a residual-stream write: embed (token and position embeddings), L{l}H{h} "
                 "(head h of layer l), L{l}.mlp, L{l}.attn_bias (the attention output bias), "
                 "bias (final norm and unembedding biases)",
    "value": "direct logit attribution: the component's write through the final norm (its "
             "scale frozen at the run's value) dotted with the unembedding of answer minus "
             "contrast; logits; the rows sum to the model's own logit difference",
    "method": "the edge-ranking method (eap, eap-ig: attribution patching without / with "
              "integrated gradients; knockout: single-edge removal from the full graph; acdc; "
              "patching: each edge scored by its sender's activation-patching effect)",
    "method_a": "first method of the pair",
    "method_b": "second method of the pair",
    "auc": "ROC AUC of the method's edge ranking (by |score|) against the known circuit; "
           "0.5 = chance, 1 = every circuit edge ranked above every other edge",
    "n_faithful": "fewest top-ranked edges whose circuit recovers 80% of clean - corrupted "
                  "(real circuit forwards, exact to one edge); empty = never",
    "n_edges": "number of edges (of the graph, or kept in the circuit at this point)",
    "top_edges": "the method's five strongest edges, sender -> receiver input",
    "k": "how many top-ranked edges are compared",
    "shared": "edges in both methods' top k",
    "overlap": "shared / k; 1 = the same top-k edges",
    "delta_loss": "loss with the ablation minus the loss without; > 0 = the ablated part helps",
    # -- what a row is -------------------------------------------------------------------
    "layer": "layer index, 0-based (L{layer} in head names)",
    "head": "head index within its layer, 0-based (H{head} in head names; under GQA a query "
            "head)",
    "head_name": "the head as L{layer}H{head}",
    "ranked_by": "the score this row was picked by (the top heads by induction, then by "
                 "previous_token)",
    "layout": "the sparse attention layout compared with the dense pattern: window_N = a "
              "sliding window of the N most recent tokens",
    "position": "key position (token index in the prompt, 0 = the first token)",
    "pos": "token position in the prompt (0 = the first token)",
    "token": "the token at that position, as text",
    # -- quickstart: composition and sinks ----------------------------------------------
    "src": "the earlier head, whose output is read (here a top previous-token head)",
    "dst": "the later head, which reads it through its keys (here a top induction head)",
    "percentile": "share of all heads of earlier layers that compose less with the same dst "
                  "head than src does, in %; 0-100, near 100 = src stands out",
    "baseline_mean": "mean composition score of all heads of earlier layers into the same dst "
                     "head: what an unremarkable pair scores",
    "mass": "attention on this key position: alpha(k) averaged over the layer's heads; 0-1; "
            "Gu et al. 2024",
    "max_head_alpha": "alpha(k) of the layer's head that attends to this position most; 0-1",
    # -- circuits --------------------------------------------------------------------------
    "patching": "head patching effect: metric with this head's clean output patched into the "
                "corrupted run, minus the corrupted metric (what node attribution estimates)",
    "sender": "the node whose output the edge carries: embed, L{l}H{h} (a head) or MLP{l}",
    "receiver": "the node whose input the edge feeds: L{l}H{h}, L{l}KV{g} (the keys/values "
                "of GQA group g), MLP{l} or logits",
    "input": "which input of the receiver the edge feeds: q, k or v of a head (k/v of a KV "
             "group), in = an MLP's or the logits' input",
    "sender_layer": "layer of the sender; -1 = the embeddings",
    "receiver_layer": "layer of the receiver; n_layers = the logits",
    "node": "a circuit node: embed, L{l}H{h}, L{l}KV{g}, MLP{l} or logits",
    "kind": "what the node is: embed (token and position embeddings), head, kv_group (the "
            "shared keys/values of a GQA group), mlp or logits",
    # -- linearised ---------------------------------------------------------------------
    "feature_map": "linear-attention feature map swapped in for softmax (softmax = the "
                   "original model)",
    "layer_set": "which layers were swapped (none = the original model)",
    "layers": "the swapped layer indices, e.g. 0-14",
    "n_swapped": "number of layers swapped",
    "kv_accuracy": "share of key-value lookup prompts whose top next token is the answer; 0-1",
    "kv_logprob": "mean log-probability of the answer token (nats; closer to 0 is better)",
    "n_prompts": "number of lookup prompts",
    "perplexity": "perplexity on the text, exp(mean next-token loss); lower is better",
    "accuracy_ratio": "kv_accuracy / the original model's kv_accuracy",
    "ppl_ratio": "perplexity / the original model's perplexity (> 1 = worse)",
    # -- retrieval sweep ------------------------------------------------------------------
    "impl": "the attention implementation (mixer stack label) of the trained model",
    "d_model": "model width (size of the residual stream)",
    "num_kv_pairs": "key-value pairs per MQAR sequence",
    "setup": "hash of the point's full setup (model, task, training): its identity in the "
             "resumable sweep",
    "n_params": "number of trained parameters",
    "final_loss": "training loss at the last step",
    "seconds": "training time in seconds",
    "mixers": "the sequence mixers of each layer, in order",
    "eff_rank": "effective rank of the attention map, exp(entropy of the normalised singular "
                "values); Roy & Vetterli 2007; higher = tells more keys apart",
    "energy_rank": "number of leading singular values holding 99% of the attention map's "
                   "energy",
    "row_entropy": "mean entropy of a query's attention row (nats); 0 = each query reads one "
                   "key",
    "min_row_entropy": "row_entropy of the sharpest head",
    "pearson": "Pearson correlation of retrieval error with the measure across models; -1..1",
    "spearman": "Spearman rank correlation of retrieval error with the measure; -1..1",
    "n": "number of items the row is computed over (models, questions)",
    # -- s2a --------------------------------------------------------------------------------
    "condition": "which context the model answered from: original, s2a (its own rewrite) or "
                 "oracle (the relevant text only)",
    "example": "id of the question (one per example of the data set)",
    "context": "the context the model was given",
    "output": "the model's answer (greedy)",
    "correct": "whether the answer contains the right answer or an alias (word match)",
    "follows_opinion": "share (or whether) the answer follows the opinion planted in the "
                       "context instead of the right answer",
    "rewrite_raw": "the model's rewrite of the context before cleaning",
    "distractor_survival": "share of the distractor text still in the rewrite; 0-1",
    "opinion_survival": "share of the planted opinion still in the rewrite; 0-1",
    "relevant_survival": "share of the relevant text still in the rewrite; 0-1",
    "distractor_attention": "attention mass from the last prompt token on distractor tokens "
                            "(mean over layers, heads, questions); 0-1",
    "relevant_attention": "attention mass on the relevant text; 0-1",
    "opinion_attention": "attention mass on the planted opinion; 0-1",
    "question_attention": "attention mass on the question; 0-1",
    "template_attention": "attention mass on the prompt template (chat markup, "
                          "instructions); 0-1",
    "distractor": "attention mass on distractor tokens in this layer (mean over heads and "
                  "questions); 0-1",
    "relevant": "attention mass on the relevant text in this layer; 0-1",
    "opinion": "attention mass on the planted opinion in this layer; 0-1",
    "question": "attention mass on the question in this layer; 0-1",
    "template": "attention mass on the prompt template in this layer; 0-1",
    # -- streaming ------------------------------------------------------------------------
    "window": "recent keys each query keeps (empty = dense, all keys)",
    "sinks": "first tokens each query keeps besides the window (StreamingLLM's attention "
             "sinks; Xiao et al. 2023)",
    "ppl_beyond": "perplexity on the tokens past the largest window + sinks (where keys "
                  "were dropped)",
    "n_beyond": "number of tokens ppl_beyond is computed over",
    "dense": "perplexity beyond the window with all keys kept",
    "window_only": "perplexity beyond the window with the window alone (no sinks)",
    "with_sinks": "perplexity beyond the window with the sinks + the window",
    "blowup": "window_only / with_sinks: how much worse dropping the first tokens is",
    "sink_vs_dense": "with_sinks / dense: the price of the bounded cache (1 = none)",
    "mode": "how the stream was decoded: dense (full cache), window (the recent window "
            "only), sink (first tokens + window, bounded caches) or recompute (the window "
            "recomputed from scratch)",
    "chunk": "chunk index of the stream",
    "start": "first token of the chunk",
    "end": "end of the chunk (exclusive)",
    "n_eval": "number of tokens scored",
    "ms_per_token": "median decode step in milliseconds",
    "ppl_after_evict": "perplexity on the tokens after the first tokens left a bounded cache",
    "ppl_matched": "perplexity on the recompute positions only (the fair comparison with "
                   "recompute)",
}

#: columns a long table's preview is sorted by (descending), first match wins
FOCUS = ("induction", "normalised", "alpha", "score", "mass_inside", "copying", "accuracy")


def legend_lines(columns) -> list[tuple[str, str]]:
    """``[(column, meaning)]`` for the columns of a table that have a legend entry."""
    return [(c, COLUMNS[c]) for c in columns if c in COLUMNS]


def preview(df: pd.DataFrame, max_rows: int) -> tuple[pd.DataFrame, str | None]:
    """The rows a report shows of ``df``: all when it fits, else the top ``max_rows`` by the
    first :data:`FOCUS` column it has (most informative first), else the first rows.
    Returns ``(rows, the column sorted by or None)``."""
    if len(df) <= max_rows:
        return df, None
    for col in FOCUS:
        if col in df.columns and pd.api.types.is_numeric_dtype(df[col]):
            return df.sort_values(col, ascending=False, kind="stable").head(max_rows), col
    return df.head(max_rows), None


def column_format(values: pd.Series) -> str:
    """One number format for a whole float column: fixed decimals chosen from its largest
    magnitude (4 significant digits there), scientific when everything is tiny or huge."""
    finite = values[pd.notna(values)].abs()
    finite = finite[finite != float("inf")]
    top = float(finite.max()) if len(finite) else 0.0
    if top == 0.0:
        return "{:.4f}"
    if top >= 1e6 or top < 1e-3:
        return "{:.3e}"
    if top >= 1000:
        return "{:,.1f}"
    if top >= 10:
        return "{:.2f}"
    return "{:.4f}"
