//go:build !fixedshop

package main

// defaultShop is the shop script this build embeds as its default: the
// seed's bug, BUY without a balance check, so coin can go negative. The
// fixed build (go build -tags fixedshop) has shop_fixed.go instead; a
// --scripts directory overrides either.
const defaultShop = "shop.lua"
