// One-off steps the adapter runs on a benchmark database, each in a short-lived process:
//
//   node setup.js install QUEUE OTHER     schema (start() installs it) and both queues
//   node setup.js preload QUEUE COUNT     COUNT jobs {"n": i} in one insert() call (one statement)
//   node setup.js notify QUEUE            the queue's `notify` option on (W4: see the adapter)
import { createBoss } from './boss.js'

const [command, queue, arg] = process.argv.slice(2)
// Maintenance, cron and the instance registry have nothing to do in these few seconds.
const boss = createBoss({ supervise: false, schedule: false, registerInstance: false })
await boss.start()
try {
  if (command === 'install') {
    // Queue options left at pg-boss's defaults (policy 'standard', notify off).
    await boss.createQueue(queue)
    await boss.createQueue(arg)
  } else if (command === 'preload') {
    const count = Number.parseInt(arg, 10)
    const jobs = Array.from({ length: count }, (_, n) => ({ data: { n } }))
    await boss.insert(queue, jobs)
  } else if (command === 'notify') {
    await boss.updateQueue(queue, { notify: true })
  } else {
    throw new Error(`unknown command: ${command}`)
  }
} finally {
  await boss.stop({ graceful: false })
}
