"""The one default of each generation setting, for every caller and command (no heavy imports: the command line
reads them to build its help)."""

MAX_NEW_TOKENS = 64  # longest response, in new tokens
TEMPERATURE = 1.0  # sampling; greedy callers (evaluation, `generate`, `chat`) set 0
TOP_P = 1.0
TOP_K = 0
# Rows (prompts x samples) decoded together. On 2 CPU cores a decode step of the 135M model is bound by its matrix
# products above a few dozen rows, so larger batches gain little there; on a GPU they gain in proportion.
BATCH_ROWS = 128
# `alignkit chat` replies: a conversation's answer, longer than a sampled or evaluated response.
CHAT_REPLY_TOKENS = 256
