// The official Node.js client across a leader SIGKILL (tests/rocketmq_v5/test_failover.py).
// Usage: node failover.js ENDPOINTS NORMAL_TOPIC FIFO_TOPIC GROUP_PREFIX DIR
// Sends normal and FIFO messages (message groups node-0 / node-1, bodies `node-G:SEQ`) until DIR/stop exists,
// while a PushConsumer (PREFIX-push) consumes NORMAL_TOPIC and a SimpleConsumer (PREFIX-simple) FIFO_TOPIC;
// writes DIR/consuming once both consumers started, and DIR/count: how many sends were acknowledged so far. DIR/stop holds the other producer's acknowledged ids
// {normal: [...], fifo: [...]}: the consumers then go on until they have those and this script's own.
// Prints one JSON line {normal: [ids acked], fifo: [ids acked], push: [ids], simple: [[id, body], ...]}.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { Producer, PushConsumer, ConsumeResult } = require('rocketmq-client-nodejs');
const { started, run } = require('./lib');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

run(async () => {
  const [endpoints, normalTopic, fifoTopic, prefix, dir] = process.argv.slice(2);
  const stopFile = path.join(dir, 'stop');
  const acked = { normal: [], fifo: [] };
  const push = new Set();
  const simpleSeen = [];
  const simple = await started(endpoints, `${prefix}-simple`, fifoTopic);
  const consumer = new PushConsumer({
    endpoints, consumerGroup: `${prefix}-push`, subscriptions: new Map().set(normalTopic, '*'),
    messageListener: { consume: (m) => { push.add(m.messageId); return ConsumeResult.SUCCESS; } },
  });
  await consumer.startup();
  fs.writeFileSync(path.join(dir, 'consuming'), '');
  const producer = new Producer({ endpoints, requestTimeout: 3000 });
  await producer.startup();
  let done = false;
  const receiving = (async () => {
    while (!done) {
      try {
        for (const m of await simple.receive(32, 5000)) {
          simpleSeen.push([m.messageId, m.body.toString()]);
          await simple.ack(m).catch(() => {});
        }
      } catch (err) { await sleep(100); } // a leader change: tried again
    }
  })();
  for (let seq = 0; !fs.existsSync(stopFile); seq++) {
    for (const [kind, extra] of [['normal', {}], ['fifo', { messageGroup: `node-${seq % 2}` }]]) {
      const topic = kind === 'normal' ? normalTopic : fifoTopic;
      try {
        const body = Buffer.from(`node-${seq % 2}:${seq}`);
        acked[kind].push((await producer.send({ topic, body, ...extra })).messageId);
      } catch (err) { await sleep(50); } // not acknowledged: nothing is promised
    }
    fs.writeFileSync(path.join(dir, 'count.tmp'), String(acked.normal.length + acked.fifo.length));
    fs.renameSync(path.join(dir, 'count.tmp'), path.join(dir, 'count'));
  }
  await producer.shutdown();
  const other = JSON.parse(fs.readFileSync(stopFile, 'utf8'));
  const wantPush = [...acked.normal, ...other.normal];
  const wantSimple = [...acked.fifo, ...other.fifo];
  const deadline = Date.now() + 90000;
  const have = () => wantPush.every((id) => push.has(id))
    && wantSimple.every((id) => simpleSeen.some(([seen]) => seen === id));
  while (!have() && Date.now() < deadline) await sleep(200);
  done = true;
  await receiving;
  // no consumer.shutdown(): it waits out its receives in flight (long polls of up to 30 s); the exit ends them
  await simple.shutdown();
  return { normal: acked.normal, fifo: acked.fifo, push: [...push], simple: simpleSeen };
});
