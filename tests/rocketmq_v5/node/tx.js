// Transactions with the official Node.js client: one committed, one rolled back, and one left open that the
// broker checks (the checker commits it). Usage: node tx.js ENDPOINTS TOPIC GROUP.
// Prints one JSON line {committed, rolledBack, orphan, checked: [...ids], received: [...ids], left: [...ids]}.
'use strict';
const { Producer } = require('rocketmq-client-nodejs');
const { TransactionResolution } = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/definition_pb');
const { started, drain, leftover, run } = require('./lib');

run(async () => {
  const [endpoints, topic, group] = process.argv.slice(2);
  const checked = [];
  const checker = {
    async check(m) {
      checked.push(m.messageId);
      return m.body.toString() === 'orphan' ? TransactionResolution.COMMIT : TransactionResolution.TRANSACTION_RESOLUTION_UNSPECIFIED;
    },
  };
  const producer = new Producer({ endpoints, requestTimeout: 5000, topic, checker });
  await producer.startup();
  await producer.send({ topic, body: Buffer.from('creates the topic') });
  const consumer = await started(endpoints, group, topic);
  const sendIn = async (body) => {
    const tx = producer.beginTransaction();
    return [tx, (await producer.send({ topic, body: Buffer.from(body) }, tx)).messageId];
  };
  const [commitTx, committed] = await sendIn('commit me');
  const [rollTx, rolledBack] = await sendIn('roll me back');
  const [, orphan] = await sendIn('orphan');
  await commitTx.commit();
  await rollTx.rollback();
  const got = await drain(consumer, [committed, orphan]);
  const left = await leftover(consumer);
  await consumer.shutdown();
  await producer.shutdown();
  return { committed, rolledBack, orphan, checked, received: [...got.keys()], left };
});
