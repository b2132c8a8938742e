"""One proposal strategy per search algorithm: which architectures to evaluate next.

Barrier strategies (Archai's loop) propose a whole population per iteration from the front of the
previous one; the asynchronous one proposes one child whenever an evaluation slot frees. Every draw comes
from the search space's seeded RNG, whose state the iteration records keep, so a resumed search proposes
what the uninterrupted one would have.
"""

from __future__ import annotations

import abc
import random
from collections.abc import Callable, Sequence
from functools import partial
from typing import ClassVar

from facenas.domain import Direction
from facenas.errors import ArchSpecError
from facenas.search.config import AlgorithmParams
from facenas.search.history import SearchHistory
from facenas.search.pareto import pareto_front
from facenas.space.hgnet import Arch, HgnetSearchSpace, ParamRange

MAX_PROPOSAL_TRIES = 20
#: Random draws that find no unseen architecture within the parameter range before the space counts as
#: exhausted (the chance that an unseen architecture with a fair share of the draws exists is then nil).
EXHAUSTION_DRAWS = 5_000

Proposal = tuple[Arch, tuple[str, ...]]  # a child and its parents' archids


class ProposalStrategy(abc.ABC):
    """Proposes unseen architectures within the parameter range."""

    name: ClassVar[str]
    asynchronous: ClassVar[bool] = False

    def __init__(
        self,
        space: HgnetSearchSpace,
        params: AlgorithmParams,
        size_range: ParamRange,
        history: SearchHistory,
        directions: Sequence[Direction],
    ) -> None:
        self.space = space
        self.params = params
        self.size_range = size_range
        self.history = history
        self.directions = list(directions)

    @property
    def total(self) -> int:
        """Candidates a full search proposes (Archai's budget)."""
        p = self.params
        return p.init_num_models + (p.num_iters - 1) * p.max_unseen_population

    def fits(self, arch: Arch) -> bool:
        return arch.archid not in self.history.archs and self.space.num_parameters(arch) in self.size_range

    #: Why the space is exhausted (``""`` while it is not): set once random draws find nothing unseen.
    exhausted: str = ""

    def random_valid(self) -> Arch | None:
        """An unseen random architecture within range; None once the space is exhausted (see
        :data:`EXHAUSTION_DRAWS`; :attr:`exhausted` says why). The history only grows, so that is final."""
        if self.exhausted:
            return None
        in_range: set[str] = set()
        for _ in range(EXHAUSTION_DRAWS):
            arch = _or_none(self.space.random_sample)
            if arch is None or self.space.num_parameters(arch) not in self.size_range:
                continue
            if arch.archid not in self.history.archs:
                return arch
            in_range.add(arch.archid)
        lo, hi = self.size_range.low, self.size_range.high
        self.exhausted = (
            f"{EXHAUSTION_DRAWS} random draws found no architecture with {lo:g}-{hi:g} parameters"
            if not in_range
            else f"{EXHAUSTION_DRAWS} random draws found only the {len(in_range)} architecture(s) with "
            f"{lo:g}-{hi:g} parameters already proposed"
        )
        return None

    def initial_population(self) -> list[Arch]:
        """Archai's random initial population; deterministic from the seed, so a search resumed before
        its first iteration record proposes exactly the same architectures again (idempotently)."""
        out: dict[str, Arch] = {}
        for _ in range(self.params.init_num_models):
            for _ in range(MAX_PROPOSAL_TRIES * 5):
                arch = _or_none(self.space.random_sample)
                if (
                    arch is not None
                    and arch.archid not in out
                    and self.space.num_parameters(arch) in self.size_range
                ):
                    out[arch.archid] = arch
                    break
        return list(out.values())

    def next_population(self, front: list[str]) -> list[Proposal]:
        """The next iteration's unseen candidates (barrier strategies)."""
        raise NotImplementedError(f"{self.name} proposes one candidate at a time")

    def next_candidate(self, front: list[str]) -> Proposal | None:
        """One more candidate now (asynchronous strategies); None when none can be found."""
        raise NotImplementedError(f"{self.name} proposes whole populations")

    # --- shared building blocks --------------------------------------------------------------------

    def _collector(self) -> tuple[dict[str, Proposal], Callable[[Arch | None, tuple[str, ...]], bool]]:
        chosen: dict[str, Proposal] = {}

        def take(arch: Arch | None, parents: tuple[str, ...]) -> bool:
            if arch is not None and self.fits(arch) and arch.archid not in chosen:
                chosen[arch.archid] = (arch, parents)
                return True
            return False

        return chosen, take

    def _mutants(self, parents: list[Arch], take: Callable[[Arch | None, tuple[str, ...]], bool]) -> None:
        for parent in parents:
            made = 0
            for _ in range(MAX_PROPOSAL_TRIES):
                if made >= self.params.mutations_per_parent:
                    break
                made += take(_or_none(partial(self.space.mutate, parent)), (parent.archid,))

    def _shuffled_cut(self, chosen: dict[str, Proposal]) -> list[Proposal]:
        population = list(chosen.values())
        self.space.rng.shuffle(population)
        return population[: self.params.max_unseen_population]

    def _front_archs(self, front: list[str]) -> list[Arch]:
        return [self.history.archs[a] for a in front]


class EvolutionPareto(ProposalStrategy):
    """Archai's recipe: mutants of each front member, crossovers of the front and random samples,
    shuffled and cut to ``max_unseen_population``."""

    name = "evolution_pareto"

    def next_population(self, front: list[str]) -> list[Proposal]:
        chosen, take = self._collector()
        parents = self._front_archs(front)
        self._mutants(parents, take)
        if parents:
            for _ in range(self.params.num_crossovers):
                take(_or_none(partial(self.space.crossover, parents)), ())
        for _ in range(self.params.num_random_mix):
            take(self.random_valid(), ())
        return self._shuffled_cut(chosen)


class LocalSearch(ProposalStrategy):
    """Archai's local search: mutants of each front member only."""

    name = "local_search"

    def next_population(self, front: list[str]) -> list[Proposal]:
        chosen, take = self._collector()
        self._mutants(self._front_archs(front), take)
        return self._shuffled_cut(chosen)


class RandomSearch(ProposalStrategy):
    """Archai's random search: ``max_unseen_population`` random samples per iteration."""

    name = "random_search"

    def next_population(self, front: list[str]) -> list[Proposal]:
        chosen, take = self._collector()
        for _ in range(self.params.max_unseen_population):
            take(self.random_valid(), ())
        return self._shuffled_cut(chosen)


class RegularizedEvolution(ProposalStrategy):
    """Regularized (aging) evolution with Pareto tournaments: for each child, the front of a random sample
    of the ``history_size`` most recent evaluated candidates gives the parent to mutate."""

    name = "regularized_evolution"

    def next_population(self, front: list[str]) -> list[Proposal]:
        chosen, take = self._collector()
        p = self.params
        points = self.history.complete()
        recent = [a for a in self.history.archs if a in points][-p.history_size :]
        if not recent:
            return []
        rng = self.space.rng
        for _ in range(p.max_unseen_population * MAX_PROPOSAL_TRIES):
            if len(chosen) >= p.max_unseen_population:
                break
            sample = rng.sample(recent, min(p.pareto_sample_size, len(recent)))
            parent = self.history.archs[
                rng.choice(pareto_front({a: points[a] for a in sample}, self.directions))
            ]
            take(_or_none(partial(self.space.mutate, parent)), (parent.archid,))
        return list(chosen.values())


class AsyncEvolutionPareto(ProposalStrategy):
    """Ours: no barrier. Archai's initial population (from the seed, as the barrier strategies draw it),
    then one child at a time from the current front, by the barrier recipe's proportions of mutation,
    crossover and random mix."""

    name = "async_evolution_pareto"
    asynchronous = True

    _initial: list[Arch] | None = None

    def initial(self) -> list[Arch]:
        """The barrier strategies' initial population (Archai's, from the seed), drawn once."""
        if self._initial is None:
            rng = self.space.rng
            self.space.rng = random.Random(self.params.seed)
            try:
                self._initial = self.initial_population()
            finally:
                self.space.rng = rng
        return self._initial

    def next_candidate(self, front: list[str]) -> Proposal | None:
        if len(self.history.archs) < self.params.init_num_models:
            unseen = [a for a in self.initial() if a.archid not in self.history.archs]
            if unseen:
                return unseen[0], ()
            arch = self.random_valid()
            return None if arch is None else (arch, ())
        parents = self._front_archs(front)
        p = self.params
        rng = self.space.rng
        weights = [
            p.mutations_per_parent * len(parents),
            p.num_crossovers if parents else 0,
            p.num_random_mix,
        ]
        if sum(weights) == 0:
            weights = [0, 0, 1]
        for _ in range(MAX_PROPOSAL_TRIES):
            op = rng.choices(("mutate", "crossover", "random"), weights=weights)[0]
            child: Arch | None
            origin: tuple[str, ...] = ()
            if op == "mutate":
                parent = rng.choice(parents)
                child, origin = _or_none(partial(self.space.mutate, parent)), (parent.archid,)
            elif op == "crossover":
                child = _or_none(partial(self.space.crossover, parents))
            else:
                child = self.random_valid()
            if child is not None and self.fits(child):
                return child, origin
        arch = self.random_valid()
        return None if arch is None else (arch, ())


STRATEGIES: dict[str, type[ProposalStrategy]] = {
    cls.name: cls
    for cls in (EvolutionPareto, AsyncEvolutionPareto, LocalSearch, RegularizedEvolution, RandomSearch)
}


def _or_none(make: Callable[[], Arch]) -> Arch | None:
    """A proposal, or None when it is unbuildable (e.g. a random draw beyond the size limit)."""
    try:
        return make()
    except ArchSpecError:
        return None
