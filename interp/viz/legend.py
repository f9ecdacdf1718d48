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
    "delta_loss": "loss with the ablation minus the loss without; > 0 = the ablated part helps",
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
