-- game.lua: the rules of WORK and the STATUS reply.
--
-- The game's data (players, coins, stock) lives in Go; these functions get
-- the values they need as arguments and return the new ones, and Go stores
-- them. They run one command at a time, with the world locked.
local M = {}

-- The numbers. They are rules: a new version of this file that changes them
-- takes effect when it patches the running one (see __check).
M.pay = 5             -- coins per WORK
M.exp = 1             -- experience per WORK
M.exp_per_level = 100 -- experience per level; level 1 at 0 exp

-- work returns a player's coin, exp and level after one WORK.
function M.work(coin, exp)
	exp = exp + M.exp
	return coin + M.pay, exp, 1 + math.floor(exp / M.exp_per_level)
end

-- status is the STATUS reply. bag is "item:count,..." in item order, ""
-- when empty.
function M.status(id, coin, bag, version, pid)
	return "OK player=" .. id .. " coin=" .. coin .. " bag=" .. bag .. " version=" .. version .. " pid=" .. pid
end

-- __check runs when a new version of this file patches the running one:
-- the numbers are rules, not state, so the new ones replace the old.
function M.__check(old, new)
	old.pay, old.exp, old.exp_per_level = new.pay, new.exp, new.exp_per_level
end

return M
