// PushConsumer with the official Node.js client on a group configured by the test (2 attempts, short backoff):
// a message that succeeds, one that fails once, one that always fails and ends in %DLQ%GROUP.
// Usage: node push.js ENDPOINTS TOPIC GROUP. Prints one JSON line {ids: {body: id}, attempts: {body: [...]},
// dead: [...ids read from %DLQ%GROUP]}.
'use strict';
const { Producer, PushConsumer, ConsumeResult } = require('rocketmq-client-nodejs');
const { started, drain, run } = require('./lib');

run(async () => {
  const [endpoints, topic, group] = process.argv.slice(2);
  const producer = new Producer({ endpoints, requestTimeout: 5000 });
  await producer.startup();
  const ids = {};
  for (const body of ['ok', 'flaky', 'poison']) {
    ids[body] = (await producer.send({ topic, body: Buffer.from(body) })).messageId;
  }
  await producer.shutdown();
  const reader = await started(endpoints, `${group}-reader`, `%DLQ%${group}`);
  const attempts = {};
  const consumer = new PushConsumer({
    endpoints, consumerGroup: group, subscriptions: new Map().set(topic, '*'),
    messageListener: {
      consume(m) {
        const body = m.body.toString();
        (attempts[body] = attempts[body] || []).push(m.deliveryAttempt);
        const fail = body === 'poison' || (body === 'flaky' && attempts[body].length === 1);
        return fail ? ConsumeResult.FAILURE : ConsumeResult.SUCCESS;
      },
    },
  });
  await consumer.startup();
  const dead = await drain(reader, [ids.poison]);
  const deadline = Date.now() + 60000;
  while ((attempts.flaky || []).length < 2 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  // no consumer.shutdown(): it waits out its receives in flight (long polls of up to 30 s); the exit ends them
  await reader.shutdown();
  return { ids, attempts, dead: [...dead.keys()] };
});
