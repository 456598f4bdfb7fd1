"""The smallest Alto program: split a text into words, map them, gather per text.

Run: python examples/quickstart.py
"""

from __future__ import annotations

import anyio

import alto
from alto import Gather, Split


@alto.stage
async def words(text: str) -> Split[str]:
    for word in text.split():
        yield word


@alto.stage(replicas=4)
async def shout(word: str) -> str:
    await anyio.sleep(0.01)  # stands in for a model call
    return word.upper()


@alto.stage
async def sentence(words: Gather[str]) -> str:
    return " ".join(words)


@alto.flow
def loud(text: str):
    return sentence(shout(words(text)))


if __name__ == "__main__":
    print(loud.plan.describe())
    for line in alto.run(loud, ["streams beat supersteps", "gather per parent"]):
        print(line)
