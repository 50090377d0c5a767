// A producer process holding one started PgBoss, as an application holds one, driven by the
// adapter over stdin/stdout, one JSON object a line each way:
//
//   {"op": "send", "data": {...}}            one send()
//   {"op": "insert", "items": [{...}, ...]}  one insert() of these payloads
//   {"op": "loop", "jobs": N, "batch": B, "gap": G, "stamp": S}
//        the loop W1, W2 and W4 time (benchmarks/workloads/producing.py runs the same loop in
//        Python for the other libraries): N jobs {"n": i}, one per send() (B null) or B per
//        insert(), each call starting G seconds after the previous one's slot (0: back to
//        back), with "t" = epoch seconds just before the call in each payload when S. The loop
//        runs here, so no call pays a round trip to the adapter; the answer is its duration.
//
// Each line is answered with {"ok": true[, "seconds": s]} or {"ok": false, "error": "..."};
// {"ready": true} comes first, once start() has returned. End of input stops the PgBoss.
import { createInterface } from 'node:readline'
import { setTimeout as sleep } from 'node:timers/promises'
import { createBoss, epochSeconds } from './boss.js'

const queue = process.argv[2]
const boss = createBoss()
await boss.start()

function answer (message) {
  process.stdout.write(JSON.stringify(message) + '\n')
}

async function loop ({ jobs, batch, gap, stamp }) {
  // Payloads are built before the clock starts, as the Python loop builds them.
  const size = batch ?? 1
  const calls = []
  for (let first = 0; first < jobs; first += size) {
    const items = []
    for (let n = first; n < Math.min(first + size, jobs); n++) items.push({ n })
    calls.push(items)
  }
  const start = performance.now()
  for (let k = 0; k < calls.length; k++) {
    if (gap > 0) {
      const wait = start + k * gap * 1000 - performance.now()
      if (wait > 0) await sleep(wait)
    }
    const items = calls[k]
    if (stamp) {
      const t = epochSeconds()
      for (const item of items) item.t = t
    }
    if (batch === null) {
      await boss.send(queue, items[0])
    } else {
      await boss.insert(queue, items.map(data => ({ data })))
    }
  }
  return (performance.now() - start) / 1000
}

answer({ ready: true })
for await (const line of createInterface({ input: process.stdin })) {
  try {
    const request = JSON.parse(line)
    if (request.op === 'send') {
      await boss.send(queue, request.data)
      answer({ ok: true })
    } else if (request.op === 'insert') {
      await boss.insert(queue, request.items.map(data => ({ data })))
      answer({ ok: true })
    } else if (request.op === 'loop') {
      answer({ ok: true, seconds: await loop(request) })
    } else {
      throw new Error(`unknown op: ${request.op}`)
    }
  } catch (error) {
    answer({ ok: false, error: String(error?.stack ?? error) })
  }
}
await boss.stop()
process.exit(0)
