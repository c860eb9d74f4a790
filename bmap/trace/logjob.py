"""An nbdkit log file worked on in a child process: read, scanned, paired and annotated there,
while this process loads the map and then formats and writes the records."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any

from bmap.trace.annotate import AnnotationTables, RecordBatch, RecordStream
from bmap.trace.nbdkit import NbdkitParser, nbdkit_log_columns
from bmap.trace.requests import Columns
from bmap.trace.worker import Forked, Receive


class NbdkitLogJob:
    """An nbdkit log file read, scanned and paired in a forked child process
    (:class:`bmap.trace.worker.Forked`) from the moment this is made; annotated there too, into
    coalesced record batches, once :meth:`annotate_with` hands it the map's tables. The scan
    needs no map, so it runs while this process loads the map.
    """

    WAITING_LIMIT = 1_000_000
    """Requests the child keeps before it has the tables; then it waits for them."""

    def __init__(self, fh: IO[bytes], name: str, parser: NbdkitParser | None = None) -> None:
        self.parser = parser if parser is not None else NbdkitParser()
        """Counts the lines it could not parse (copied back from the child at the end)."""
        self.name = name
        self._fh = fh
        self._forked: Forked[tuple[str, Any]] = Forked(self._work, inbox=True)
        fh.close()  # the child has its own descriptor

    def _work(self, receive: Receive) -> Iterator[tuple[str, Any]]:
        stream: RecordStream | None = None
        waiting: list[Columns] = []
        count = 0
        for columns in nbdkit_log_columns(self._fh, self.parser, self.name):
            if stream is None:
                tables = receive(wait=count >= self.WAITING_LIMIT)
                if tables is not None:
                    stream = RecordStream(tables)
            if stream is None:
                waiting.append(columns)
                count += len(columns)
                continue
            for early in waiting:
                yield "batch", stream.add(early)
            waiting = []
            yield "batch", stream.add(columns)
        if stream is None:
            stream = RecordStream(receive(wait=True))
        for early in waiting:
            yield "batch", stream.add(early)
        yield "batch", stream.flush()
        yield "parser", (self.parser.unparsed, self.parser.first_unparsed)

    def annotate_with(self, tables: AnnotationTables) -> None:
        self._forked.send(tables)

    def batches(self) -> Iterator[RecordBatch]:
        """The records, coalesced, in order; at the end ``parser`` has the log's counts of
        lines it could not parse."""
        for kind, item in self._forked:
            if kind == "batch":
                yield item
            else:
                self.parser.unparsed, self.parser.first_unparsed = item

    def close(self) -> None:
        self._forked.close()
