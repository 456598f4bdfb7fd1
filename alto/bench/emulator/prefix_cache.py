"""The emulated KV cache: blocks of 16 tokens, with vLLM's automatic prefix caching.

Timing emulation, not a model: no key or value is stored, only which blocks hold which tokens.
The semantics follow vLLM's (V1 ``KVCacheManager`` / ``BlockPool``, docs "Automatic Prefix
Caching"):

* A full block of ``BLOCK_TOKENS`` tokens is identified by a hash chain: the hash of its
  parent block's hash and its own tokens, so a block is shared only by sequences whose whole
  prefix up to and including it is the same. Partial blocks are never shared.
* A sequence's blocks are referenced while it runs; when it finishes (or is preempted) they
  are freed but keep their hash, so a later request with the same prefix finds them.
* Freed blocks wait in a least-recently-freed queue; allocating a block under pressure takes
  the queue's head and forgets its hash (LRU eviction of unreferenced blocks). Blocks of one
  sequence are freed tail first, so a prefix outlives its own suffix.
* At least one prompt token is always computed (the last one), so a fully cached prompt
  hits ``(prompt_tokens - 1) // BLOCK_TOKENS`` blocks.

Laws: ``free_blocks + referenced blocks == num_blocks``; a cached block's hash maps back to
it; a block in use is never evicted.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Sequence

from alto.bench.emulator.config import BLOCK_TOKENS
from alto.bench.emulator.text import count_tokens


def token_ids(text: str, chars_per_token: float) -> list[int]:
    """The emulator's tokens of ``text``, as ids: ``count_tokens(text)`` of them.

    Token ``i`` is the text between characters ``round(i * chars_per_token)`` and the next
    boundary; the last token takes the rest. A token's id depends only on its characters,
    so two texts that share a prefix share its tokens (all but, at most, the last).
    """
    n = count_tokens(text, chars_per_token)
    bounds = [min(len(text), round(i * chars_per_token)) for i in range(n)] + [len(text)]
    return [zlib.crc32(text[bounds[i] : bounds[i + 1]].encode()) for i in range(n)]


def block_hashes(tokens: Sequence[int]) -> list[int]:
    """The hash chain of ``tokens``' full blocks: ``hash((parent hash, block tokens))``."""
    hashes: list[int] = []
    parent = 0
    for start in range(0, len(tokens) - BLOCK_TOKENS + 1, BLOCK_TOKENS):
        parent = hash((parent, tuple(tokens[start : start + BLOCK_TOKENS])))
        hashes.append(parent)
    return hashes


class BlockPool:
    """KV blocks of one replica: which are free, which are referenced, which are cached.

    Args:
        num_blocks: capacity in blocks.
        caching: keep freed full blocks findable by their hash (prefix caching).
    """

    def __init__(self, num_blocks: int, *, caching: bool = True) -> None:
        self.num_blocks = num_blocks
        self.caching = caching
        self._refs = [0] * num_blocks
        self._hash: list[int | None] = [None] * num_blocks
        self._cached: dict[int, int] = {}  # block hash -> block id
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.evictions = 0
        self.hit_tokens = 0
        self.queried_tokens = 0

    @property
    def free_blocks(self) -> int:
        """Blocks no running sequence references (cached ones included: they can be evicted)."""
        return len(self._free)

    @property
    def cached_blocks(self) -> int:
        """Blocks that hold a known full block's tokens, referenced or not."""
        return len(self._cached)

    def lookup(self, hashes: Sequence[int], prompt_tokens: int) -> list[int]:
        """The cached blocks of the longest prefix of ``hashes`` (not yet referenced)."""
        if not self.caching:
            return []
        limit = (prompt_tokens - 1) // BLOCK_TOKENS  # the last prompt token is always computed
        found: list[int] = []
        for h in hashes[:limit]:
            block = self._cached.get(h)
            if block is None:
                break
            found.append(block)
        self.queried_tokens += prompt_tokens
        self.hit_tokens += len(found) * BLOCK_TOKENS
        return found

    def reset_cache(self) -> int:
        """Forget every cached block that no sequence references; how many were forgotten.

        Blocks in use keep their hash (vLLM refuses a reset while requests run; here the
        running ones simply keep theirs). Counters are left as they are.
        """
        dropped = 0
        for block_hash, block in list(self._cached.items()):
            if self._refs[block] == 0:
                del self._cached[block_hash]
                self._hash[block] = None
                dropped += 1
        return dropped

    def touch(self, blocks: Sequence[int]) -> None:
        """Reference ``blocks`` (found by :meth:`lookup`): they leave the eviction queue."""
        for block in blocks:
            if self._refs[block] == 0:
                del self._free[block]
            self._refs[block] += 1

    def allocate(self, count: int) -> list[int] | None:
        """``count`` fresh blocks, evicting the least recently freed; None if too few are free."""
        if count > len(self._free):
            return None
        blocks = []
        for _ in range(count):
            block, _ = self._free.popitem(last=False)
            old = self._hash[block]
            if old is not None:
                del self._cached[old]
                self._hash[block] = None
                self.evictions += 1
            self._refs[block] = 1
            blocks.append(block)
        return blocks

    def cache(self, block: int, block_hash: int) -> None:
        """Record that ``block`` now holds the full block ``block_hash``."""
        if not self.caching or self._hash[block] is not None:
            return
        if block_hash in self._cached:  # computed twice (two prompts prefilled at once)
            return
        self._hash[block] = block_hash
        self._cached[block_hash] = block

    def free(self, blocks: Sequence[int]) -> None:
        """Drop one reference to each of ``blocks``, the last block first."""
        for block in reversed(blocks):
            self._refs[block] -= 1
            if self._refs[block] == 0:
                self._free[block] = None  # the tail: evicted last
