"""Print tokens as they arrive: the for-loop every script starts with.

    OPENAI_API_KEY=sk-... python examples/stream_tokens.py "Tell me a joke"
"""

import sys

import llmstreamer as ls

prompt = " ".join(sys.argv[1:]) or "Tell me a joke about streams."
stream = ls.stream_chat(prompt)  # provider from $LLM_PROVIDER, default openai
for text in stream:
    print(text, end="", flush=True)
print()
