"""proxy/cdn/fill.py: every reader of a fill gets the whole body in order whenever it joins while
the fill is kept; past the limit the fill is not kept, chunks all readers passed are dropped, and
the pump is held back by the slowest reader. Hypothesis drives the interleavings."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.cdn.fill import HIGH_WATER, Fill


@settings(max_examples=60, deadline=None)
@given(chunks=st.lists(st.binary(min_size=1, max_size=50), min_size=1, max_size=30),
       joins=st.lists(st.integers(0, 30), min_size=1, max_size=4))
def test_readers_joining_at_any_point_get_the_whole_body(chunks, joins):
    async def main() -> None:
        fill = Fill(limit=10**9)
        got: list[list[bytes]] = []

        async def read(reader, out):
            while chunk := await reader.next_chunk():
                out.append(chunk)

        tasks = []
        for i, chunk in enumerate(chunks):
            for j in joins:
                if j == i:
                    out: list[bytes] = []
                    got.append(out)
                    tasks.append(asyncio.create_task(read(fill.reader(), out)))
            fill.feed(chunk)
            await asyncio.sleep(0)
        fill.finish()
        late: list[bytes] = []
        got.append(late)
        tasks.append(asyncio.create_task(read(fill.reader(), late)))
        await asyncio.gather(*tasks)
        assert all(b"".join(o) == b"".join(chunks) for o in got)
        assert fill.keep and fill.body() == b"".join(chunks)

    asyncio.run(main())


def test_past_the_limit_not_kept_trimmed_and_no_new_reader():
    async def main() -> None:
        fill = Fill(limit=100)
        r = fill.reader()
        fill.feed(b"a" * 60)
        assert fill.keep and fill.can_join()
        fill.feed(b"b" * 60)  # 120 > 100
        assert not fill.keep
        assert await r.next_chunk() == b"a" * 60
        assert fill.base == 1 and not fill.can_join()  # the first chunk is dropped once read
        assert await r.next_chunk() == b"b" * 60
        assert fill.chunks == []
        fill.finish()
        assert await r.next_chunk() == b""

    asyncio.run(main())


def test_the_pump_waits_for_the_slowest_reader_of_an_unkept_fill():
    async def main() -> None:
        fill = Fill(limit=1)
        r = fill.reader()
        piece = b"x" * 65536
        for _ in range(HIGH_WATER // len(piece) + 2):
            fill.feed(piece)
        room = asyncio.create_task(fill.room())
        await asyncio.sleep(0.01)
        assert not room.done()  # more than HIGH_WATER unread
        while fill.unread() > HIGH_WATER:
            await r.next_chunk()
        await asyncio.wait_for(room, 1)
        r.close()
        assert fill.chunks == []  # no reader left: nothing is kept

    asyncio.run(main())


def test_a_failed_fill_raises_in_its_readers():
    async def main() -> None:
        fill = Fill(limit=100)
        r = fill.reader()
        fill.feed(b"abc")
        fill.fail(ConnectionError("origin gone"))
        assert await r.next_chunk() == b"abc"
        try:
            await r.next_chunk()
        except ConnectionError:
            pass
        else:
            raise AssertionError("the error was not raised")
        assert not fill.can_join()

    asyncio.run(main())
