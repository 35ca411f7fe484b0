"""Write configs/data/chats.jsonl: multi-turn conversations in TRL's ``messages`` format (deterministic).

Each conversation has a system prompt and one to three user/assistant turns drawn from the
tasks of make_pairs.py (spell a word in capitals, count on, name an animal's sound). Run it
again to regenerate the file bit for bit: ``python configs/data/make_chats.py``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from make_pairs import pairs

SYSTEMS = ("You are a helpful assistant.", "Answer briefly.", "You are a playful tutor for children.")


def conversations(count: int = 240, seed: int = 0) -> list[dict[str, list[dict[str, str]]]]:
    rng = random.Random(seed)
    turns = pairs(count * 2, seed=seed)
    out = []
    for index in range(count):
        messages = [{"role": "system", "content": SYSTEMS[index % len(SYSTEMS)]}]
        for pair in rng.sample(turns, rng.randint(1, 3)):
            messages.append({"role": "user", "content": pair["prompt"]})
            messages.append({"role": "assistant", "content": pair["completion"].strip()})
        out.append({"messages": messages})
    return out


if __name__ == "__main__":
    path = Path(__file__).with_name("chats.jsonl")
    path.write_text("".join(json.dumps(row) + "\n" for row in conversations()))
    print(f"wrote {path}")
