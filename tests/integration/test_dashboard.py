

async def test_throughput_takes_a_sane_window(world: dict[str, Any]) -> None:
    pq = world["pq"]
    rates = await pq.get_queue_throughput("orders", window=60.0, buckets=3)
    assert rates == {"orders": [(0, 0), (0, 0), (0, 1)]}
    assert await pq.get_queue_throughput("events") == {}
    for window, buckets in ((0.0, 12), (float("nan"), 12), (3600.0, 0), (3600.0, 1001)):
        with pytest.raises(pgqueue.InvalidInputError):
            await pq.get_queue_throughput(window=window, buckets=buckets)
    with pytest.raises(pgqueue.InvalidNameError):
        await pq.get_queue_throughput("bad name!")
