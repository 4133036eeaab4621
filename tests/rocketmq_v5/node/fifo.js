// FIFO with a retry, with the official Node.js client, on a FIFO topic and group (configured by the test).
// Usage: node fifo.js ENDPOINTS TOPIC GROUP. Sends 12 messages over message groups order-0 and order-1, then
// receives, leaving message 4 unacknowledged once (with what came after it in its batch of the same group).
// Prints one JSON line {seen: {"0": [...], "1": [...]} in acknowledgement order, failed: [attempts of 4]}.
'use strict';
const { Producer } = require('rocketmq-client-nodejs');
const { started, run } = require('./lib');

run(async () => {
  const [endpoints, topic, group] = process.argv.slice(2);
  const consumer = await started(endpoints, group, topic);
  const producer = new Producer({ endpoints, requestTimeout: 5000 });
  await producer.startup();
  for (let i = 0; i < 12; i++) {
    await producer.send({ topic, body: Buffer.from(`${i % 2}:${i}`), messageGroup: `order-${i % 2}` });
  }
  await producer.shutdown();
  const seen = { 0: [], 1: [] };
  const failed = [];
  const deadline = Date.now() + 90000;
  while (seen[0].length + seen[1].length < 12 && Date.now() < deadline) {
    const held = new Set();
    for (const m of await consumer.receive(32, 2000)) {
      const [key, n] = m.body.toString().split(':');
      if (m.messageGroup !== `order-${key}`) throw new Error(`message group ${m.messageGroup} for ${key}`);
      if (n === '4') {
        failed.push(m.deliveryAttempt);
        if (failed.length === 1) held.add(key);
      }
      if (!held.has(key)) {
        seen[key].push(Number(n));
        await consumer.ack(m);
      }
    }
  }
  await consumer.shutdown();
  return { seen, failed };
});
