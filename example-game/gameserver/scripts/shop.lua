-- shop.lua: the shop's rules, with the seed's bug: BUY does not check the
-- balance, so coin can go negative. shop_fixed.lua is the same shop with
-- the check; copy it over this file and reload to fix a running game.
--
-- The stock and the players' coins and bags live in Go; these functions
-- decide, Go applies. They run one command at a time, with the world locked.
local M = {}

-- rule names this version's BUY rule, for the log.
M.rule = "buggy shop: BUY does not check the balance"

-- goods is the catalogue, in item order.
M.goods = {
	{ id = 1001, name = "potion", price = 10 },
	{ id = 1002, name = "gourd", price = 2 },
}

-- sold counts the goods sold since this process loaded the shop. It is
-- state: a patch keeps it (an upgrade, a new process, starts it at 0).
local sold = 0

local function find(id)
	for _, g in ipairs(M.goods) do
		if g.id == id then
			return g
		end
	end
end

-- catalogue lists the goods for an error: "1001 (potion), 1002 (gourd)".
local function catalogue()
	local s = {}
	for i, g in ipairs(M.goods) do
		s[i] = g.id .. " (" .. g.name .. ")"
	end
	return table.concat(s, ", ")
end

-- unknown is nil for an item the shop sells, else the error.
function M.unknown(id)
	if find(id) then
		return nil
	end
	return "unknown item " .. id .. ": the shop sells " .. catalogue()
end

-- buy decides one purchase of item id by a player with coin coins, of a
-- good with remain left: it returns the price to pay, or nil and why not.
function M.buy(id, coin, remain)
	local g = find(id)
	if not g then
		return nil, M.unknown(id)
	end
	if remain <= 0 then
		return nil, "out of stock: item " .. id
	end
	-- The seed's bug: no balance check here.
	sold = sold + 1
	return g.price
end

-- report is the SHOP reply: what sold, and the catalogue with prices.
function M.report()
	local s = {}
	for i, g in ipairs(M.goods) do
		s[i] = g.id .. ":" .. g.name .. ":" .. g.price
	end
	return "OK sold=" .. sold .. " goods=" .. table.concat(s, ",")
end

-- __check runs when a new version of this file patches the running one:
-- the catalogue and the rule's name are rules, so the new ones replace the
-- old; sold is state, and stays.
function M.__check(old, new)
	old.goods, old.rule = new.goods, new.rule
end

return M
