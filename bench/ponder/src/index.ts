// Ponder handlers: the same normalised rows our indexer writes, one handler per event.
import { ponder } from "ponder:registry";
import schema from "ponder:schema";

type Ctx = any;
type Ev = any;
const key = (event: Ev) => `${event.block.number}-${event.log.logIndex}`;

async function bump(context: Ctx, account: `0x${string}`, field: "submitted" | "approved" | "rejected" | "withdrawn") {
  await context.db
    .insert(schema.reputation)
    .values({ account, submitted: 0, approved: 0, rejected: 0, withdrawn: 0, [field]: 1 })
    .onConflictDoUpdate((row: any) => ({ [field]: row[field] + 1 }));
}

async function status(event: Ev, context: Ctx, value: string, actor: `0x${string}` | null, reason: number | null) {
  const id = event.args.contributionId;
  const row = await context.db.update(schema.contribution, { id }).set({ status: value });
  await context.db.insert(schema.contributionStatus).values({ id: key(event), contributionId: id, status: value, actor, reason });
  await bump(context, row.contributor, value as "approved" | "rejected" | "withdrawn");
}

ponder.on("DatanetRegistry:DatanetCreated", async ({ event, context }) => {
  const a = event.args;
  await context.db.insert(schema.datanet).values({
    id: a.datanetId, owner: a.owner, metadataCid: a.metadataCid, license: a.license, treasury: a.treasury,
    stake: a.stake, allowlisted: a.allowlisted, slashOnReject: a.slashOnReject, version: 0n,
  });
});
ponder.on("DatanetRegistry:DatanetVersionIncreased", async ({ event, context }) => {
  await context.db.update(schema.datanet, { id: event.args.datanetId }).set({ version: BigInt(event.args.version) });
});
ponder.on("DatanetRegistry:CuratorSet", async ({ event, context }) => {
  const a = event.args;
  await context.db.insert(schema.curatorChange).values({ id: key(event), datanetId: a.datanetId, account: a.account, enabled: a.enabled });
});
ponder.on("DatanetRegistry:ContributionSubmitted", async ({ event, context }) => {
  const a = event.args;
  await context.db.insert(schema.contribution).values({
    id: a.contributionId, datanetId: a.datanetId, contributor: a.contributor, contentHash: a.contentHash, cid: a.cid,
    size: BigInt(a.size), rowCount: Number(a.rowCount), stake: a.stake, status: "pending", blockNumber: event.block.number,
  });
  await context.db.insert(schema.contributionStatus).values({ id: key(event), contributionId: a.contributionId, status: "pending", actor: a.contributor, reason: null });
  await bump(context, a.contributor, "submitted");
});
ponder.on("DatanetRegistry:ContributionApproved", async ({ event, context }) => {
  await status(event, context, "approved", event.args.curator, null);
});
ponder.on("DatanetRegistry:ContributionRejected", async ({ event, context }) => {
  await status(event, context, "rejected", event.args.curator, Number(event.args.reason));
});
ponder.on("DatanetRegistry:ContributionWithdrawn", async ({ event, context }) => {
  await status(event, context, "withdrawn", null, null);
});

ponder.on("ModelRegistry:ModelRegistered", async ({ event, context }) => {
  const a = event.args;
  await context.db.insert(schema.model).values({
    id: a.modelId, owner: a.owner, name: a.name, parentId: a.parentId, lineageRoot: a.lineageRoot, adapterHash: a.adapterHash,
  });
});
ponder.on("ModelRegistry:ModelLineage", async ({ event, context }) => {
  const a = event.args;
  await context.db.update(schema.model, { id: a.modelId }).set({ baseModel: a.baseModel, adapterCid: a.adapterCid });
  await context.db.insert(schema.modelContribution).values(
    a.contributionIds.map((c: bigint) => ({ id: `${a.modelId}-${c}`, modelId: a.modelId, contributionId: c })));
});
ponder.on("ModelRegistry:ModelTermsSet", async ({ event, context }) => {
  const a = event.args;
  await context.db.update(schema.model, { id: a.modelId }).set({ pricePerCall: a.pricePerCall, server: a.server });
});

ponder.on("UsageEscrow:Deposited", async ({ event, context }) => {
  const a = event.args;
  await context.db.insert(schema.escrowMovement).values({ id: key(event), modelId: a.modelId, consumer: a.consumer, kind: "deposit", amount: a.amount });
});
ponder.on("UsageEscrow:Withdrawn", async ({ event, context }) => {
  const a = event.args;
  await context.db.insert(schema.escrowMovement).values({ id: key(event), modelId: a.modelId, consumer: a.consumer, kind: "withdrawal", amount: a.amount });
});
ponder.on("UsageEscrow:Charged", async ({ event, context }) => {
  const a = event.args;
  await context.db.insert(schema.charge).values({
    id: key(event), modelId: a.modelId, consumer: a.consumer, seq: BigInt(a.seq), amount: a.amount, cumulativeAmount: a.cumulativeAmount,
  });
});
ponder.on("UsageEscrow:FeesPaid", async ({ event, context }) => {
  const a = event.args;
  await context.db.insert(schema.feePayment).values({ id: key(event), modelId: a.modelId, payer: a.payer, seq: BigInt(a.seq), amount: a.amount });
});
ponder.on("UsageEscrow:FeesReleased", async ({ event, context }) => {
  const a = event.args;
  await context.db.insert(schema.feeRelease).values({ id: key(event), modelId: a.modelId, fromSeq: BigInt(a.fromSeq), toSeq: BigInt(a.toSeq), amount: a.amount });
});

ponder.on("AttributionSettlement:EpochSettled", async ({ event, context }) => {
  const a = event.args;
  await context.db.insert(schema.epoch).values({
    id: `${a.modelId}-${a.epoch}`, modelId: a.modelId, epoch: BigInt(a.epoch), uptoSeq: BigInt(a.uptoSeq),
    payoutRoot: a.payoutRoot, claimCap: a.claimCap, resultsCid: a.resultsCid,
  });
});
ponder.on("AttributionSettlement:EpochSplit", async ({ event, context }) => {
  const a = event.args;
  await context.db.update(schema.epoch, { id: `${a.modelId}-${a.epoch}` }).set({
    feeTotal: a.feeTotal, protocolAmount: a.protocolAmount, ownerAmount: a.ownerAmount, carriedDust: a.carriedDust,
  });
});
ponder.on("AttributionSettlement:Claimed", async ({ event, context }) => {
  const a = event.args;
  await context.db.insert(schema.claim).values({ id: key(event), modelId: a.modelId, epoch: BigInt(a.epoch), account: a.account, amount: a.amount });
});

// Every event not handled above still gets its row (our indexer mirrors every log).
const handled = new Set([
  "DatanetRegistry:DatanetCreated", "DatanetRegistry:DatanetVersionIncreased", "DatanetRegistry:CuratorSet",
  "DatanetRegistry:ContributionSubmitted", "DatanetRegistry:ContributionApproved", "DatanetRegistry:ContributionRejected",
  "DatanetRegistry:ContributionWithdrawn", "ModelRegistry:ModelRegistered", "ModelRegistry:ModelLineage",
  "ModelRegistry:ModelTermsSet", "UsageEscrow:Deposited", "UsageEscrow:Withdrawn", "UsageEscrow:Charged",
  "UsageEscrow:FeesPaid", "UsageEscrow:FeesReleased", "AttributionSettlement:EpochSettled",
  "AttributionSettlement:EpochSplit", "AttributionSettlement:Claimed",
]);
const chain = JSON.parse((await import("node:fs")).readFileSync(new URL("../chain.json", import.meta.url), "utf8"));
for (const [contract, abi] of Object.entries(chain.abis as Record<string, any[]>)) {
  for (const item of abi) {
    if (item.type !== "event") continue;
    const name = `${contract}:${item.name}`;
    if (handled.has(name)) continue;
    ponder.on(name as any, async ({ event, context }: { event: Ev; context: Ctx }) => {
      await context.db.insert(schema.otherEvent).values({ id: key(event), contract, name: item.name, blockNumber: event.block.number });
    });
  }
}
