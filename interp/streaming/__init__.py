"""StreamingLLM (Xiao et al. 2023) on a HF Llama model: a sink + ring-buffer KV cache with
positions assigned inside the cache (:mod:`.cache`), a manual decode loop over the model's
own layers (:mod:`.decoder`), and the streaming perplexity / decode-cost evaluation
(:mod:`.evaluate`)."""
from interp.streaming.cache import StreamingKVCache  # noqa: F401
from interp.streaming.decoder import StreamingLM  # noqa: F401
from interp.streaming.evaluate import MODES, StreamResult, evaluate_stream, stream_tokens  # noqa: F401
