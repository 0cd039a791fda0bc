"""One script, any provider: set LLM_PROVIDER (and that provider's key).

    LLM_PROVIDER=gemini GEMINI_API_KEY=... python examples/switch_provider.py
"""

import os
import sys

import llmstreamer as ls

provider = os.environ.get("LLM_PROVIDER", "openai")
completion = ls.chat(" ".join(sys.argv[1:]) or "Say hello in French.", provider=provider)
print(f"{provider} ({completion.model}): {completion.text}")
