// The bench's head-latency probe: the newest contribution id in Ponder's database.
import { db } from "ponder:api";
import schema from "ponder:schema";
import { Hono } from "hono";
import { max } from "ponder";

const app = new Hono();
app.get("/bench/latest", async (c) => {
  const rows = await db.select({ id: max(schema.contribution.id) }).from(schema.contribution);
  return c.json({ latest_contribution: rows[0]?.id?.toString() ?? null });
});
export default app;
