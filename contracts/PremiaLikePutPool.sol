// SPDX-License-Identifier: MIT
pragma solidity 0.8.27;

/// Premia v3 pool key (IPoolFactory.PoolKey); `strike` is UD60x18 (18 decimals) in the ABI.
struct PoolKey {
    address base;
    address quote;
    address oracleAdapter;
    uint256 strike;
    uint256 maturity;
    bool isCallPool;
}

/// Premia v3 Position.Delta (SD59x18 fields, int256 in the ABI).
struct Delta {
    int256 collateral;
    int256 longs;
    int256 shorts;
}

interface IERC20Like {
    function decimals() external view returns (uint8);
    function transfer(address to, uint256 amount) external returns (bool);
}

interface IOracleAdapterLike {
    function getPrice(address tokenIn, address tokenOut) external view returns (uint256);
}

interface IERC20RouterLike {
    function safeTransferFrom(address token, address from, address to, uint256 amount) external;
}

interface IPoolFactoryLike {
    function volatility() external view returns (uint256);
    function lockCollateral(address token, uint256 amount, address to) external;
}

/// @title PremiaLikePutPool
/// @notice Devnet stand-in for a Premia v3 put pool (no package ships Premia's bytecode). It speaks
/// the subset of `IPool` the agent uses, with the same selectors, argument/return types and custom
/// errors as the Premia v3 ABI package's IPool: `getPoolSettings`, `getQuoteAMM`, `trade`, `exercise`,
/// ERC-1155 `balanceOf`/`balanceOfBatch`/`setApprovalForAll`/`isApprovedForAll`/`safeTransferFrom`.
///
/// Differences from the real pool (kept small on purpose):
/// * Pricing is Black-Scholes (r = 0, 365-day year) at the factory's settable implied volatility and
///   the oracle adapter's spot, not Premia's concentrated-liquidity AMM. No price impact.
/// * The write side is the factory (one shared underwriter): each buy locks `strike * size` of the
///   quote token from it into this pool and mints SHORT (id 0) to the factory, LONG (id 1) to the taker.
/// * Only buys (isBuy = true) on put pools; sells revert with `Pool__InsufficientBidLiquidity`.
/// * As in Premia, tokens are pulled through the ERC20Router: takers approve the router, not the pool.
/// * Taker fee as Premia's `_takerFee` without discounts/referrals: max(3% of premium, 0.3% of
///   collateral), capped at 12.5% of premium.
/// * No ERC1155 receiver callbacks on mint/transfer.
contract PremiaLikePutPool {
    uint256 internal constant SHORT = 0;
    uint256 internal constant LONG = 1;
    int256 internal constant WAD = 1e18;
    uint256 internal constant UWAD = 1e18;
    int256 internal constant LN2 = 693147180559945309;
    int256 internal constant SQRT2 = 1414213562373095049;
    int256 internal constant TWO_OVER_SQRT_PI = 1128379167095512574;
    int256 internal constant ONE_OVER_SQRT_PI = 564189583547756287;
    uint256 internal constant YEAR = 365 days;
    uint256 internal constant PREMIUM_FEE = 0.03e18;
    uint256 internal constant COLLATERAL_FEE = 0.003e18;
    uint256 internal constant MAX_PREMIUM_FEE = 0.125e18;

    PoolKey internal key;
    address public factory;
    address public router;
    uint8 public quoteDecimals;
    bool private initialized;
    mapping(uint256 => mapping(address => uint256)) private balances;
    mapping(uint256 => uint256) public totalSupply;
    mapping(address => mapping(address => bool)) private operators;

    event TransferSingle(
        address indexed operator, address indexed from, address indexed to, uint256 id, uint256 value
    );
    event ApprovalForAll(address indexed account, address indexed operator, bool approved);
    event Trade(
        address indexed user,
        uint256 contractSize,
        Delta delta,
        uint256 premium,
        uint256 takerFee,
        uint256 protocolFee,
        uint256 marketPrice,
        uint256 liquidityRate,
        uint256 currentTick,
        uint256 totalReferralRebate,
        bool isBuy
    );
    event Exercise(
        address indexed operator,
        address indexed holder,
        uint256 contractSize,
        uint256 exerciseValue,
        uint256 settlementPrice,
        uint256 fee,
        uint256 operatorCost
    );

    error Pool__AboveMaxSlippage(uint256 value, uint256 minimum, uint256 maximum);
    error Pool__OptionExpired();
    error Pool__OptionNotExpired();
    error Pool__ZeroSize();
    error Pool__InsufficientBidLiquidity();
    error Pool__OutOfBoundsPrice(uint256 price);
    error ERC1155Base__NotOwnerOrApproved();
    error ERC1155Base__TransferExceedsBalance();
    error ERC1155Base__TransferToZeroAddress();
    error ERC1155Base__SelfApproval();
    error ERC1155Base__ArrayLengthMismatch();
    error PremiaLike__AlreadyInitialized();

    /// Called once by the factory right after it clones this pool.
    function initialize(PoolKey calldata k, address router_) external {
        if (initialized) revert PremiaLike__AlreadyInitialized();
        initialized = true;
        key = k;
        factory = msg.sender;
        router = router_;
        quoteDecimals = IERC20Like(k.quote).decimals();
    }

    function getPoolSettings()
        external
        view
        returns (
            address base,
            address quote,
            address oracleAdapter,
            uint256 strike,
            uint256 maturity,
            bool isCallPool
        )
    {
        return (key.base, key.quote, key.oracleAdapter, key.strike, key.maturity, key.isCallPool);
    }

    // -- pricing ------------------------------------------------------------------------------

    /// Spot of base in quote (18 decimals) from the pool's oracle adapter.
    function spot() public view returns (uint256) {
        return IOracleAdapterLike(key.oracleAdapter).getPrice(key.base, key.quote);
    }

    /// Black-Scholes put price per contract (18 decimals) at the current spot, volatility and time.
    function markPrice() public view returns (uint256) {
        if (block.timestamp >= key.maturity) return 0;
        uint256 tau = ((key.maturity - block.timestamp) * UWAD) / YEAR;
        return blackScholesPut(spot(), key.strike, tau, IPoolFactoryLike(factory).volatility());
    }

    /// Premium and taker fee of buying `size` contracts, both 18 decimals (USD-like units).
    function _quote(uint256 size) internal view returns (uint256 premium, uint256 fee) {
        premium = (markPrice() * size) / UWAD;
        uint256 premiumFee = (premium * PREMIUM_FEE) / UWAD;
        uint256 notionalFee = (((size * key.strike) / UWAD) * COLLATERAL_FEE) / UWAD;
        fee = premiumFee > notionalFee ? premiumFee : notionalFee;
        uint256 maxFee = (premium * MAX_PREMIUM_FEE) / UWAD;
        if (fee > maxFee) fee = maxFee;
    }

    /// 18 decimals -> quote-token decimals, rounded up (the pool never undercharges).
    function _toTokenUp(uint256 amount18) internal view returns (uint256) {
        uint256 scale = 10 ** (18 - uint256(quoteDecimals));
        return (amount18 + scale - 1) / scale;
    }

    function _toToken(uint256 amount18) internal view returns (uint256) {
        return amount18 / 10 ** (18 - uint256(quoteDecimals));
    }

    /// IPool.getQuoteAMM: `premiumNet` (premium + fee) and `takerFee`, in quote-token decimals.
    function getQuoteAMM(address, uint256 size, bool isBuy)
        external
        view
        returns (uint256 premiumNet, uint256 takerFee)
    {
        if (size == 0) revert Pool__ZeroSize();
        if (block.timestamp >= key.maturity) revert Pool__OptionExpired();
        if (!isBuy) revert Pool__InsufficientBidLiquidity();
        (uint256 premium, uint256 fee) = _quote(size);
        takerFee = _toTokenUp(fee);
        premiumNet = _toTokenUp(premium) + takerFee;
    }

    // -- trading ------------------------------------------------------------------------------

    /// IPool.trade: buy `size` puts (18 decimals) paying at most `premiumLimit` (quote decimals).
    function trade(uint256 size, bool isBuy, uint256 premiumLimit, address referrer)
        external
        returns (uint256 totalPremium, Delta memory delta)
    {
        referrer; // referrals are not modelled
        if (size == 0) revert Pool__ZeroSize();
        if (block.timestamp >= key.maturity) revert Pool__OptionExpired();
        if (!isBuy) revert Pool__InsufficientBidLiquidity();
        (uint256 premium18, uint256 fee18) = _quote(size);
        uint256 fee = _toTokenUp(fee18);
        totalPremium = _toTokenUp(premium18) + fee;
        // Premia's _revertIfTradeAboveMaxSlippage for a buy: (value, 0, premiumLimit).
        if (totalPremium > premiumLimit) revert Pool__AboveMaxSlippage(totalPremium, 0, premiumLimit);

        IERC20RouterLike(router).safeTransferFrom(key.quote, msg.sender, address(this), totalPremium);
        uint256 collateral = _toTokenUp((size * key.strike) / UWAD);
        IPoolFactoryLike(factory).lockCollateral(key.quote, collateral, address(this));
        _mint(factory, SHORT, size);
        _mint(msg.sender, LONG, size);

        delta = Delta({
            collateral: -int256(totalPremium * 10 ** (18 - uint256(quoteDecimals))),
            longs: int256(size),
            shorts: 0
        });
        emit Trade(
            msg.sender, size, delta, premium18, fee18, 0, markPrice(), 0, 0, 0, true
        );
    }

    /// IPool.exercise: after maturity, pay the caller's longs (K - S)+ per contract at the current
    /// oracle spot (Premia caches a settlement price at maturity; the devnet uses the spot now).
    function exercise() external returns (uint256 exerciseValue, uint256 exerciseFee) {
        if (block.timestamp < key.maturity) revert Pool__OptionNotExpired();
        uint256 size = balances[LONG][msg.sender];
        if (size == 0) return (0, 0);
        uint256 s = spot();
        balances[LONG][msg.sender] = 0;
        totalSupply[LONG] -= size;
        emit TransferSingle(msg.sender, msg.sender, address(0), LONG, size);
        if (s < key.strike) {
            exerciseValue = _toToken(((key.strike - s) * size) / UWAD);
            if (exerciseValue > 0) IERC20Like(key.quote).transfer(msg.sender, exerciseValue);
        }
        emit Exercise(msg.sender, msg.sender, size, exerciseValue, s, 0, 0);
        return (exerciseValue, 0);
    }

    // -- ERC1155 subset -----------------------------------------------------------------------

    function balanceOf(address account, uint256 id) external view returns (uint256) {
        return balances[id][account];
    }

    function balanceOfBatch(address[] calldata accounts, uint256[] calldata ids)
        external
        view
        returns (uint256[] memory out)
    {
        if (accounts.length != ids.length) revert ERC1155Base__ArrayLengthMismatch();
        out = new uint256[](accounts.length);
        for (uint256 i = 0; i < accounts.length; i++) {
            out[i] = balances[ids[i]][accounts[i]];
        }
    }

    function setApprovalForAll(address operator, bool status) external {
        if (operator == msg.sender) revert ERC1155Base__SelfApproval();
        operators[msg.sender][operator] = status;
        emit ApprovalForAll(msg.sender, operator, status);
    }

    function isApprovedForAll(address account, address operator) external view returns (bool) {
        return operators[account][operator];
    }

    function safeTransferFrom(address from, address to, uint256 id, uint256 amount, bytes calldata)
        external
    {
        if (from != msg.sender && !operators[from][msg.sender]) revert ERC1155Base__NotOwnerOrApproved();
        if (to == address(0)) revert ERC1155Base__TransferToZeroAddress();
        uint256 bal = balances[id][from];
        if (bal < amount) revert ERC1155Base__TransferExceedsBalance();
        balances[id][from] = bal - amount;
        balances[id][to] += amount;
        emit TransferSingle(msg.sender, from, to, id, amount);
    }

    function _mint(address to, uint256 id, uint256 amount) internal {
        balances[id][to] += amount;
        totalSupply[id] += amount;
        emit TransferSingle(msg.sender, address(0), to, id, amount);
    }

    // -- Black-Scholes ------------------------------------------------------------------------

    /// Put price (18 decimals) for spot, strike, time to maturity in years and annualised
    /// volatility (all 18 decimals), risk-free rate 0:  K N(-d2) - S N(-d1).
    function blackScholesPut(uint256 spot_, uint256 strike, uint256 tau, uint256 vol)
        public
        pure
        returns (uint256)
    {
        if (spot_ == 0) return strike;
        int256 s = int256(spot_);
        int256 k = int256(strike);
        int256 volSqrtT = (int256(vol) * int256(_sqrt(tau * UWAD))) / WAD;
        if (volSqrtT == 0) return strike > spot_ ? strike - spot_ : 0;
        int256 d1 = ((_ln((s * WAD) / k) + (((volSqrtT * volSqrtT) / WAD) / 2)) * WAD) / volSqrtT;
        int256 d2 = d1 - volSqrtT;
        int256 p = (k * normalCdf(-d2)) / WAD - (s * normalCdf(-d1)) / WAD;
        return p > 0 ? uint256(p) : 0;
    }

    /// Standard normal CDF (18 decimals).
    function normalCdf(int256 x) public pure returns (int256) {
        int256 y = ((x < 0 ? -x : x) * WAD) / SQRT2;
        // 0.5 * erfc(|x| / sqrt 2) is the tail; absolute error ~1e-17.
        int256 tail = _erfc(y) / 2;
        return x < 0 ? tail : WAD - tail;
    }

    /// erfc(y) for y >= 0 (18 decimals): power series for y < 2.5, continued fraction above.
    function _erfc(int256 y) internal pure returns (int256) {
        if (y > 9 * WAD) return 0;
        int256 ey2 = _exp(-((y * y) / WAD));
        if (y < 25e17) {
            // erf(y) = 2/sqrt(pi) e^{-y^2} sum_n (2y^2)^n y / (1*3*...*(2n+1))  (all terms positive)
            int256 twoY2 = (2 * y * y) / WAD;
            int256 term = y;
            int256 sum = y;
            for (int256 n = 1; n < 200; n++) {
                term = (term * twoY2) / WAD / (2 * n + 1);
                if (term == 0) break;
                sum += term;
            }
            int256 erf = (((TWO_OVER_SQRT_PI * ey2) / WAD) * sum) / WAD;
            return WAD - erf;
        }
        // erfc(y) = e^{-y^2}/sqrt(pi) / (y + (1/2)/(y + 1/(y + (3/2)/(y + ...))))
        int256 f = y;
        for (int256 n = 60; n >= 1; n--) {
            f = y + (n * WAD * WAD) / (2 * f);
        }
        return (((ONE_OVER_SQRT_PI * ey2) / WAD) * WAD) / f;
    }

    /// Natural log of x > 0 (18 decimals): x = m 2^k with m in [1, 2), ln m = 2 atanh((m-1)/(m+1)).
    function _ln(int256 x) internal pure returns (int256) {
        if (x <= 0) revert Pool__OutOfBoundsPrice(uint256(x));
        int256 k = 0;
        while (x >= 2 * WAD) {
            x /= 2;
            k++;
        }
        while (x < WAD) {
            x *= 2;
            k--;
        }
        int256 z = ((x - WAD) * WAD) / (x + WAD);
        int256 z2 = (z * z) / WAD;
        int256 term = z;
        int256 sum = 0;
        for (int256 n = 1; n < 100; n += 2) {
            sum += term / n;
            term = (term * z2) / WAD;
            if (term == 0) break;
        }
        return k * LN2 + 2 * sum;
    }

    /// e^x (18 decimals) for x <= 40: x = k ln2 + r, Taylor series for e^r.
    function _exp(int256 x) internal pure returns (int256) {
        if (x < -42 * WAD) return 0;
        int256 k = x / LN2;
        int256 r = x - k * LN2;
        int256 term = WAD;
        int256 sum = WAD;
        for (int256 n = 1; n < 40; n++) {
            term = (term * r) / WAD / n;
            if (term == 0) break;
            sum += term;
        }
        return k >= 0 ? sum << uint256(k) : sum >> uint256(-k);
    }

    function _sqrt(uint256 x) internal pure returns (uint256 z) {
        if (x == 0) return 0;
        z = x;
        uint256 y = x / 2 + 1;
        while (y < z) {
            z = y;
            y = (x / y + y) / 2;
        }
    }
}
