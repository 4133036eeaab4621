// SimpleConsumer retry to the dead-letter queue with the official Node.js client (maxReconsumeTimes 2).
// Usage: node dlq.js ENDPOINTS TOPIC GROUP. Sends one message that is never acknowledged; prints one JSON line
// {id, attempts: [delivery attempts seen], dead: {id, topic, origin} (from %DLQ%GROUP, or null), third: bool}.
'use strict';
const { Producer } = require('rocketmq-client-nodejs');
const { started, run } = require('./lib');

run(async () => {
  const [endpoints, topic, group] = process.argv.slice(2);
  const producer = new Producer({ endpoints, requestTimeout: 5000 });
  await producer.startup();
  await producer.send({ topic, body: Buffer.from('creates the topic') });
  const reader = await started(endpoints, `${group}-reader`, `%DLQ%${group}`);
  const consumer = await started(endpoints, group, topic);
  const id = (await producer.send({ topic, body: Buffer.from('bad') })).messageId;
  await producer.shutdown();
  const attempts = [];
  let dead = null;
  let third = false;
  const deadline = Date.now() + 60000;
  while (!dead && Date.now() < deadline) {
    for (const m of await consumer.receive(8, 1000)) { // never acknowledged: visible again after 1 s
      if (m.messageId !== id) continue;
      if (attempts.length >= 2) third = true;
      attempts.push(m.deliveryAttempt);
    }
    if (attempts.length < 2) continue;
    for (const m of await reader.receive(8, 20000)) {
      await reader.ack(m);
      if (m.messageId === id) dead = { id: m.messageId, topic: m.topic, origin: m.properties.get('DLQ_ORIGIN_TOPIC') };
    }
  }
  await consumer.shutdown();
  await reader.shutdown();
  return { id, attempts, dead, third };
});
