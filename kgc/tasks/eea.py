"""EEA: event arguments, given the event types and trigger words.

Schema: line 3. The instruction lists the record's gold event types with their trigger
words: {event_type, trigger: [triggers], arguments: [roles]}, in the train split and — unlike
DeepKE, whose test prompts drop the triggers the instruction text promises — in the test
split too. Label-less input (no `event` field) asks for every event type, without triggers.
Scores: `argument` (type, role, argument) and `event` (type, trigger and its full argument
set must all match).
"""

from __future__ import annotations

from kgc.tasks.base import by_position
from kgc.tasks.ee import EE, argument_tuples
from kgc.tasks.registry import register


@register
class EEA(EE):
    name = "EEA"
    groups = ("event", "argument")
    label_fields = {"event": 0, "argument": 0}  # both tuples start with the event type
    negative_types = False

    def element(self, type_, roles, anns, text):
        if anns is None:
            return {"event_type": type_, "arguments": roles}
        triggers = [
            e.get("event_trigger") or "NAN"
            for e in by_position(text, anns, key=lambda e: e.get("event_trigger"))
            if e["event_type"] == type_
        ]
        return {"event_type": type_, "trigger": triggers, "arguments": roles}

    def test_chunks(self, anns, schema, rng, opts, text=""):
        if anns is None:
            return super().test_chunks(anns, schema, rng, opts, text)
        gold_types = list(self.positive_roles(anns))
        picked = [(t, list(schema.type_roles[t])) for t in gold_types]
        return self._finish(picked, anns, text, rng, opts)

    def tuples(self, records):
        events = []
        for r in records:
            args = tuple(sorted((a["role"], a["argument"]) for a in r.get("arguments", [])))
            events.append((r["event_type"], r.get("event_trigger") or "", args))
        return {"event": events, "argument": argument_tuples(records)}
