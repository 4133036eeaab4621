// Tag and SQL92 filters, and a new group starting at the end, with the official Node.js client.
// Usage: node filters.js ENDPOINTS TOPIC GROUP. Prints one JSON line: for the tag group (`A || C`) the old id
// (sent before its first receive), the A ids sent after, what it received and what was left; the same for the
// SQL92 group (`price > 10 AND region IN ('eu', 'us')`).
'use strict';
const { Producer } = require('rocketmq-client-nodejs');
const { started, drain, leftover, run } = require('./lib');

run(async () => {
  const [endpoints, topic, group] = process.argv.slice(2);
  const producer = new Producer({ endpoints, requestTimeout: 5000 });
  await producer.startup();
  const send = async (body, extra = {}) => (await producer.send({ topic, body: Buffer.from(body), ...extra })).messageId;
  const old = await send('before the groups', { tag: 'A' });
  const tags = await started(endpoints, group, topic, 'A || C');
  const sql = await started(endpoints, `${group}-sql`, topic, "price > 10 AND region IN ('eu', 'us')", true);
  const wantTags = [];
  for (let i = 0; i < 3; i++) wantTags.push(await send(`a${i}`, { tag: 'A', keys: [`k${i}`] }));
  await send('other tag', { tag: 'B' });
  const cases = [[{ price: '20', region: 'eu' }, true], [{ price: '20', region: 'asia' }, false],
    [{ price: 'cheap' }, false], [{ price: '11', region: 'us' }, true]];
  const wantSql = [];
  for (const [props, matches] of cases) {
    const id = await send('case', { properties: new Map(Object.entries(props)) });
    if (matches) wantSql.push(id);
  }
  await producer.shutdown();
  const gotTags = await drain(tags, wantTags);
  const gotSql = await drain(sql, wantSql);
  const out = {
    old, wantTags, gotTags: [...gotTags.keys()], tagsSeen: [...gotTags.values()].map((m) => m.tag),
    leftTags: await leftover(tags), wantSql, gotSql: [...gotSql.keys()], leftSql: await leftover(sql),
  };
  await tags.shutdown();
  await sql.shutdown();
  return out;
});
